//! kbg provider for Juju Charmed Kubernetes worker applications, through the juju CLI
