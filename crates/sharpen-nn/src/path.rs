//! Module paths during a visit, named as PyTorch checkpoints name them: burn stores Linear
//! weights as [in, out] and calls norm parameters `gamma` / `beta`; checkpoints hold [out, in]
//! and `weight` / `bias`. Used by the loaders, the savers and the LoRA adapters.

#[derive(Debug, Default)]
pub struct ModulePath {
    path: Vec<String>,
    containers: Vec<String>,
}

impl ModulePath {
    /// Enters a submodule (`ModuleVisitor::enter_module`'s arguments).
    pub fn enter(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    /// Leaves it again.
    pub fn exit(&mut self, container_type: &str) {
        self.containers.pop();
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    /// The type name of the innermost struct being visited (`Linear`, `Conv2d`, ...).
    pub fn module_type(&self) -> Option<&str> {
        self.containers
            .iter()
            .rev()
            .find_map(|c| c.strip_prefix("Struct:"))
    }

    /// The current parameter's checkpoint-style key (before any crate-specific key map), and
    /// whether the checkpoint holds the transpose of the module's tensor (rank `ndim`).
    pub fn key(&self, ndim: usize) -> (String, bool) {
        let module = self
            .containers
            .iter()
            .rev()
            .find(|c| c.starts_with("Struct:") || c.starts_with("Enum:"));
        let mut path = self.path.clone();
        let name = path.last().cloned().unwrap_or_default();
        let mut transposed = false;
        match module.map(String::as_str) {
            Some("Struct:Linear") if name == "weight" && ndim == 2 => transposed = true,
            Some("Struct:LayerNorm" | "Struct:GroupNorm" | "Struct:BatchNorm") => {
                if let Some(last) = path.last_mut() {
                    *last = match name.as_str() {
                        "gamma" => "weight".to_string(),
                        "beta" => "bias".to_string(),
                        other => other.to_string(),
                    };
                }
            }
            _ => {}
        }
        (path.join("."), transposed)
    }
}
