//! The device watcher, feeding keys as they appear and leave to the
//! fetches, from its own thread until dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;

use super::Agent;

/// The device watcher, feeding attached devices to the fetches from its
/// own thread until dropped.
pub(super) struct DeviceWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeviceWatch {
    pub fn start(agent: &Agent) -> anyhow::Result<DeviceWatch> {
        let watcher = dot_udev::Watcher::start(dot_udev::Options {
            folders: agent.config.device_folders.clone(),
            mount_into: agent.config.device_mount.clone(),
        })
        .context("starting the device watcher")?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fetches = agent.fetches.clone();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dot-devices".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match watcher
                        .events()
                        .recv_timeout(std::time::Duration::from_millis(200))
                    {
                        Ok(dot_udev::DeviceEvent::Appeared(p)) => fetches.device_appeared(&p),
                        Ok(dot_udev::DeviceEvent::Left(p)) => fetches.device_left(&p),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })?;
        Ok(DeviceWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DeviceWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
