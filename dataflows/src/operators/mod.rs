//! The dataflow's operators, one verb each, as extension traits on timely streams.

mod count;
mod route;
mod scale;
mod summarize;

pub use count::CountByEmoji;
pub use route::RouteToSubscribers;
pub use scale::Scale;
pub use summarize::{EmptyWindows, Summarize};

use timely::progress::frontier::MutableAntichain;

use crate::window::WindowId;

/// The least time an input may still deliver, or `None` once it is finished.
fn frontier_min(frontier: &MutableAntichain<WindowId>) -> Option<WindowId> {
    frontier.frontier().iter().copied().min()
}
