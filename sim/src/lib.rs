//! A simulated Kubernetes cluster served over HTTP, for kbg's demo, tests and benchmarks
