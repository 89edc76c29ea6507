//! One module per subcommand: glue from validated arguments to the library.

pub mod create;
pub mod daemon;
pub mod dht;
pub mod download;
pub mod info;
pub mod source;
