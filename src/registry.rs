//! The service registry (deploy/services.yaml): what the OS *is*. The axiomatic
//! and topology curricula are rendered from it, and it is one of the files the
//! fingerprint gate hashes.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Number of architecture layers, L0 (infrastructure) to L11 (UI).
pub const LAYERS: u8 = 12;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// 0 (infrastructure) to 11 (UI).
    pub layer: u8,
    pub port: u16,
    /// What the service is: service, orchestrator, memory, gpu_worker, dashboard, ...
    #[serde(default = "default_role")]
    pub role: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
}

fn default_role() -> String {
    "service".into()
}

impl Registry {
    pub fn load(path: &Path) -> Result<Registry> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading registry {}", path.display()))?;
        Registry::parse(&text).with_context(|| format!("parsing registry {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Registry> {
        let r: Registry = serde_yaml::from_str(text)?;
        r.check()?;
        Ok(r)
    }

    /// Names are unique, layers in range, dependencies point at known services.
    pub fn check(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        for s in &self.services {
            anyhow::ensure!(
                names.insert(s.name.as_str()),
                "service {} listed twice",
                s.name
            );
            anyhow::ensure!(
                s.layer < LAYERS,
                "service {} has layer {} (0..=11)",
                s.name,
                s.layer
            );
        }
        for s in &self.services {
            for d in &s.depends_on {
                anyhow::ensure!(
                    names.contains(d.as_str()),
                    "service {} depends on unknown {}",
                    s.name,
                    d
                );
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a registry always serializes")
    }
}
