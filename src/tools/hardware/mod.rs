//! What the machine has, and the profile and Ollama settings that fit it.
pub mod detect_hardware;
pub mod select_profile;
