//! The library half of the `enforcelog` command-line tool: the parser of
//! its JSON Lines import format. It is a library so that the fuzz targets
//! (`fuzz/`) and the tests can drive it; hosts embed the `enforcelog` crate
//! and never need this one.

pub mod import;
