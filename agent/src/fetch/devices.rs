//! Portable devices attached to the fetches: keys that appear are asked
//! for the chunks every fetch still misses, a key holding an object's
//! descriptor file describes it with no network, and in outbox mode every
//! new put is copied to the keys marked as outboxes.

use std::path::Path;
use std::sync::Arc;

use dot_plugins::Transfer;
use dot_plugins::portable::{Device, PortableSource};
use dot_store::descriptor::list_digest;
use dot_store::{Descriptor, Oid};

use super::sources::Source;
use super::{Fetches, Target, lock};

impl Fetches {
    /// A new local object: in outbox mode, copied in the background to
    /// every attached outbox key (a failure is logged; the put stands).
    /// Everything that touches the key, the outbox marker included, runs
    /// on a blocking thread.
    pub fn put_done(&self, oid: Oid) {
        if !self.outbox {
            return;
        }
        for device in self.devices() {
            let mount = device.mount_point().to_owned();
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                let device = match Device::open(&mount) {
                    Ok(d) if d.is_outbox() => d,
                    _ => return,
                };
                match device.export(&store, oid, |_, _| {}) {
                    Ok(size) => {
                        tracing::info!(%oid, size, device = %mount.display(), "put copied to outbox")
                    }
                    Err(e) => {
                        tracing::warn!(%oid, device = %mount.display(), error = %e, "copy to outbox failed")
                    }
                }
            });
        }
    }

    /// A filesystem holding a DOT store was mounted at `mount`: every
    /// fetch in flight, and every new one, asks it for all its missing
    /// chunks at once.
    pub fn device_appeared(&self, mount: &Path) {
        let device = match Device::open(mount) {
            Ok(d) => Arc::new(PortableSource::new(d)),
            // Most mounted filesystems are no key: not worth a line each.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(mount = %mount.display(), error = %e, "not a DOT device");
                return;
            }
            Err(e) => {
                tracing::warn!(mount = %mount.display(), error = %e, "device refused");
                return;
            }
        };
        let again = {
            let mut devices = lock(&self.devices);
            let before = devices.len();
            devices.retain(|d| d.mount_point() != mount);
            let again = devices.len() != before;
            devices.push(device.clone());
            again
        };
        // Once per attachment: a key seen again (a re-scan) is not news.
        if !again {
            tracing::info!(mount = %mount.display(), "device attached");
        }
        let _ = self.attached.send(device);
    }

    /// The device at `mount` left: fetches go on without it (reads of a
    /// pulled device fail, and are fetched elsewhere).
    pub fn device_left(&self, mount: &Path) {
        let was = {
            let mut devices = lock(&self.devices);
            let before = devices.len();
            devices.retain(|d| d.mount_point() != mount);
            devices.len() != before
        };
        if was {
            tracing::info!(mount = %mount.display(), "device detached");
        }
    }

    /// The devices attached now.
    pub fn devices(&self) -> Vec<Arc<PortableSource>> {
        lock(&self.devices).clone()
    }

    /// The object's description from an attached device, if one holds it
    /// (and, with a ticket's list digest, the list the ticket vouches for).
    pub(super) async fn describe_on_devices(
        &self,
        target: &Target,
    ) -> Option<(Source, u64, Vec<Descriptor>)> {
        for device in self.devices() {
            let Ok(d) = device.get_descriptors(target.oid, None).await else {
                continue;
            };
            if target
                .list_digest
                .is_some_and(|want| list_digest(&d.descriptors) != want)
            {
                tracing::warn!(oid = %target.oid, device = %device.name(), "descriptor list on the device does not match the ticket");
                continue;
            }
            let source = Source {
                label: device.name(),
                plugin: device,
                multipath: None,
                device: true,
            };
            return Some((source, d.size, d.descriptors));
        }
        None
    }
}
