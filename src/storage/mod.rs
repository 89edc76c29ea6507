//! Storage: pure piece-to-file layout and the blocking disk I/O behind it.

pub mod disk;
pub mod layout;
