//! The quota service's tables.

pub mod quota_limit;
pub mod quota_org_plan;
pub mod quota_usage;
