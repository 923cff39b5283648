//! kbg provider for pre-provisioned bare-metal hosts, over SSH
