//! Kubernetes in domain terms: where a stack runs (context and namespace,
//! validated on construction), the labels stackpilot puts on everything it
//! renders (how the engine finds pods again), and the pure translation of a
//! compose model into Kubernetes objects (`render`). No I/O here: the engine
//! talks to the API server, adapters write files.
pub mod helm;
pub mod labels;
pub mod names;
pub mod render;
pub mod target;
