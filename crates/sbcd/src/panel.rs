//! The front panel: the board's button and LEDs driven by the `panel` crate's machine.
//!
//! Temporary: no panel is driven yet; `show panel` answers "not available".

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::control_server::Ask;
use crate::engine::{Command, StateView};

/// Why the panel could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    #[error("board profile {path}: {message}")]
    Board {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Starts the panel named in the configuration; `None` when there is none to drive.
pub fn start(
    _config: &Config,
    _board_dir: Option<&std::path::Path>,
    _view: watch::Receiver<StateView>,
    _commands: mpsc::Sender<Command>,
) -> Result<Option<mpsc::Sender<Ask>>, PanelError> {
    Ok(None)
}
