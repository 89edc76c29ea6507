//! Trackers. Being written.
