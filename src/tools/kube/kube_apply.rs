//! kube_apply (next).
