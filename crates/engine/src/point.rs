//! [`PointRef`]: a sweep point as stages, events and manifests name it.

use serde::Serialize;

/// A sweep point as a stage sees it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct PointRef {
    pub index: usize,
    pub id: String,
    pub label: String,
}
