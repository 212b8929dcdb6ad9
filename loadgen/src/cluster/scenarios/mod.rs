//! The scenarios, one file each (local-hit, local-hit-resp, remote-hit and remote-hit-hot
//! share one).

mod ceiling;
mod churn;
mod graceful_leave;
mod hits;
mod hotspot;
mod miss;
mod scale_out;
mod stall;
mod stampede;
mod zipf_mixed;

pub use self::ceiling::ceiling;
pub use self::churn::churn;
pub use self::graceful_leave::graceful_leave;
pub use self::hits::{hits, local_hit_resp};
pub use self::hotspot::hotspot;
pub use self::miss::miss;
pub use self::scale_out::scale_out;
pub use self::stall::stall;
pub use self::stampede::stampede;
pub use self::zipf_mixed::zipf_mixed;
