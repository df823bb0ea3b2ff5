//! Terminal output: the live view on a TTY, plain lines otherwise, and tables.

pub mod plain;
pub mod table;
pub mod tty;
