//! Memory and hardware planning: what a model needs, which devices hold it and how many of
//! each, how fast it can decode at best, and what to choose. All byte math comes from
//! `forja-arch`; this crate adds devices, catalogs and decisions.

pub mod device;
pub mod error;
pub mod footprint;
pub mod gpu_catalog;
pub mod here;
pub mod model_catalog;
pub mod plan;
pub mod presets;
pub mod text_match;

pub use device::{Device, DeviceKind};
pub use error::PlanError;
pub use footprint::{Footprint, Serving, Workload};
pub use plan::{Plan, PlanRequest, plan};
