//! TEMPORARY stand-in for the progress display (replaced by the real module).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Plain,
    Silent,
}

pub fn choose_mode(_progress_enabled: bool, quiet: bool) -> Mode {
    if quiet {
        Mode::Silent
    } else {
        Mode::Plain
    }
}

pub struct Ui {
    mode: Mode,
}

impl Ui {
    pub fn new(mode: Mode, _width: usize, _worker_names: Vec<String>) -> Ui {
        Ui { mode }
    }
    pub fn start(&mut self, _total: usize, _expected: f64) {}
    pub fn started(&mut self, _worker: usize, _nodeid: &str) {}
    pub fn finished(&mut self, _worker: usize, _nodeid: &str, _cost: f64, _failed: bool) {}
    pub fn line(&mut self, text: &str) {
        let _ = self.mode;
        let mut text = text.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        crate::terminal::say(&text);
    }
    pub fn tick(&mut self) {}
    pub fn finish(&mut self) {}
}
