//! jmdc-core: what the edge daemon and the cloud worker share.
