//! Storage: pure piece-to-file layout and the blocking disk I/O behind it.
//! Every path below the output folder is opened without following
//! symlinks (`beneath`), and open file handles are a bounded budget.

mod beneath;
pub mod disk;
pub mod layout;
pub mod writeback;
