//! sled storage (to be written)
