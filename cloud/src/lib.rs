//! jmdc-cloud library
