//! The content-addressed FUSE namespace (fuser) over an object-source trait it defines. Built in the FUSE issue.
