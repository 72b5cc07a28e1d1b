//! `turnpike import-aperture aperture.yaml [-o turnpike.toml]`: converts an Aperture
//! configuration, checks that the result is a valid Turnpike configuration, and lists on
//! standard error every key it could not convert (or not exactly) and why.

use std::path::Path;

use anyhow::Context;

/// Converts `input`, writes the TOML to `output` (standard output when `None`) and returns the
/// exit code: 0 when every key converted, 0 too with notes (they are printed), 1 on errors.
pub fn run(
    input: &Path,
    output: Option<&Path>,
    force: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let yaml = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let conversion = turnpike_aperture::import::convert(&yaml)
        .with_context(|| format!("cannot convert {}", input.display()))?;
    // The result must load as a Turnpike configuration, services included.
    let config = turnpike_gateway::GatewayConfig::parse(&conversion.toml)
        .context("the converted configuration is not valid (please report this)")?;
    turnpike_gateway::router::Router::from_configs(&config.services)
        .context("the converted services are not valid (please report this)")?;
    match output {
        Some(path) => {
            if path.exists() && !force {
                anyhow::bail!(
                    "{} exists: choose another file or pass --force to replace it",
                    path.display()
                );
            }
            std::fs::write(path, &conversion.toml)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("turnpike: wrote {}", path.display());
        }
        None => print!("{}", conversion.toml),
    }
    if conversion.notes.is_empty() {
        eprintln!("turnpike: every key was converted");
    } else {
        eprintln!(
            "turnpike: {} key(s) not converted, or not exactly:",
            conversion.notes.len()
        );
        for note in &conversion.notes {
            eprintln!("  {note}");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
