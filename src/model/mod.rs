//! The model stage: optimal binning → WoE → linfa logistic scorecard on the 350–950 scale,
//! reason codes, dimension sub-scores, a tree-ensemble challenger, the versioned JSON artifact
//! and the training command.
pub mod binning;
