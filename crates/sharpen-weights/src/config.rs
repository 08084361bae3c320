//! Reading `config.json`-style files into their serde mirrors.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::WeightsError;

/// Reads and parses a JSON config. A missing file, malformed JSON, a missing field or a field of
/// the wrong type is an error naming the file (and serde's message names the field).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|e| WeightsError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| WeightsError::InvalidConfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads a config mirror and converts it into its validated form; validation errors name the file.
pub fn read_config<J, C, E>(path: &Path) -> Result<C, WeightsError>
where
    J: DeserializeOwned,
    C: TryFrom<J, Error = E>,
    E: std::fmt::Display,
{
    let mirror: J = read_json(path)?;
    C::try_from(mirror).map_err(|e| WeightsError::InvalidConfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
