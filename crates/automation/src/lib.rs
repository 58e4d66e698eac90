//! Automations: rules that turn triggers into actions.
//!
//! A rule names a trigger (`on`), an optional filter (`when`, see [`filter`]) and steps (`do`).

pub mod filter;
