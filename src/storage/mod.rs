//! Storage: pure piece-to-file layout and the blocking disk I/O behind it.

mod beneath;
pub mod disk;
pub mod layout;
