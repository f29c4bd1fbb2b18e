//! Compose to Kubernetes (filled in below).
