//! Reports rendered, then read back with poppler's pdftotext, pdffonts and pdfinfo
//! (Debian's poppler-utils, which `./deploy/test` installs).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;
mod content;
mod document;
mod pages;
