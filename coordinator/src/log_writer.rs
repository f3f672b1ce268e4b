//! Log lines on stderr that do not tear the progress bars: each line is written with the bars
//! lifted off the screen and drawn again after it.

use std::io::Write;

use indicatif::MultiProgress;
use tracing_subscriber::fmt::MakeWriter;

/// Makes one [`LineWriter`] per log event.
#[derive(Clone)]
pub struct BarAwareStderr {
    bars: MultiProgress,
}

impl BarAwareStderr {
    /// Writes around `bars` (hidden bars cost nothing).
    pub fn new(bars: MultiProgress) -> Self {
        BarAwareStderr { bars }
    }
}

/// Collects one event's text and writes it, bars suspended, when dropped.
pub struct LineWriter {
    bars: MultiProgress,
    text: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let text = std::mem::take(&mut self.text);
        self.bars.suspend(|| {
            // A log line that cannot be written has nowhere else to go.
            let _ = std::io::stderr().lock().write_all(&text);
        });
    }
}

impl<'a> MakeWriter<'a> for BarAwareStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            bars: self.bars.clone(),
            text: Vec::new(),
        }
    }
}
