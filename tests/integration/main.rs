//! The integration tests: real pytest and real pytest-testmon (both supported versions, from
//! the virtualenvs `scripts/setup` makes) on the fixture projects under tests/fixtures/.

mod support;

mod pty;
mod tty;

mod compat;
mod database;
mod errors;
mod faults;
mod hostile;
mod isolation;
mod noop;
mod parity;
mod parity_random;
mod plugins;
mod reporting;
mod robustness;
mod security;
mod shards;
mod testmon_failures;
mod why;
mod zygote;
