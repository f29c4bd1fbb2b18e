//! Server-side apply of rendered objects (filled in with kube_apply).
