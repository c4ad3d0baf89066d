//! Checkers: each judges a recorded history on its own, without the cluster (one file each,
//! each testable on hand-written histories).
