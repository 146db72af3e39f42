//! Device watcher: kernel uevents, mount-table changes and watched folders, reported as "a DOT device appeared / left at PATH". Built in the portable-storage issue.
