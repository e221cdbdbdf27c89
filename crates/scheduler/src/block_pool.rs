//! (block pool)
