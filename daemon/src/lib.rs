//! jmdc-edge library
