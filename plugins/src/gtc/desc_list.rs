//! An object's descriptor list put together from the pages a peer sends
//! (sans-IO): each page must continue the one before it, and the chunk
//! count a page claims is bounded by the object's size before the list
//! grows. The client's `describe` drives it; the fuzz targets of `fuzz/`
//! feed it decoded frames.

use dot_store::Descriptor;
use dot_store::descriptor::check_descriptors;

use super::client::MAX_CHUNKS;
use super::proto::DescPage;

/// The pages received so far of one object's descriptor list.
#[derive(Debug, Default)]
pub struct DescList {
    size: Option<u64>,
    descs: Vec<Descriptor>,
}

impl DescList {
    /// An empty list.
    pub fn new() -> DescList {
        DescList::default()
    }

    /// The index of the first descriptor the next page must hold (what to
    /// ask for next).
    pub fn next_first(&self) -> u32 {
        self.descs.len() as u32
    }

    /// Adds the next page; `Ok(true)` once the list holds every chunk the
    /// pages claim.
    ///
    /// # Errors
    /// Why the page cannot continue the list.
    pub fn add(&mut self, page: DescPage) -> Result<bool, &'static str> {
        if page.first != self.next_first() || self.size.is_some_and(|s| s != page.size) {
            return Err("pages do not fit together");
        }
        if page.descs.is_empty() && page.first < page.total {
            return Err("empty page before the end");
        }
        // Bound the list by what the object can hold before growing it:
        // no more chunks than bytes (nor than MAX_CHUNKS), no fewer than
        // the largest chunks allow.
        if u64::from(page.total) > page.size.max(1) || page.total > MAX_CHUNKS {
            return Err("more chunks than the object can hold");
        }
        if u64::from(page.total) < page.size.div_ceil(u64::from(dot_store::MAX_CHUNK_LEN)) {
            return Err("fewer chunks than the object needs");
        }
        self.size = Some(page.size);
        self.descs.extend(page.descs);
        Ok(self.descs.len() as u32 >= page.total)
    }

    /// The object's size and its whole list, checked to tile the object.
    ///
    /// # Errors
    /// Why the list does not describe the object.
    pub fn finish(self) -> Result<(u64, Vec<Descriptor>), String> {
        let size = self.size.unwrap_or(0);
        check_descriptors(size, &self.descs)?;
        Ok((size, self.descs))
    }
}
