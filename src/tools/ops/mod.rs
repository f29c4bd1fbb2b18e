//! Day-2 operations on a running stack: its logs, the tasks it declares, and
//! the secrets its .env needs.
pub mod init_env;
pub mod logs;
pub mod run_task;
