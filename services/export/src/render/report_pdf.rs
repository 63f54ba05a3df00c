use bytes::BytesMut;

use super::{RenderError, Report};

pub fn render(_report: &Report) -> Result<BytesMut, RenderError> {
    Err(RenderError::new("PDF", "placeholder"))
}
