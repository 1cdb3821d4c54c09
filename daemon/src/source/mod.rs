//! Frame sources (owned by the sources work; placeholder until it lands).
