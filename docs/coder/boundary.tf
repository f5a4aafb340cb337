# boundary in a Coder workspace template: the agent's startup script installs boundary for the workspace user
# (no root), writes its config from these variables, checks that a jail mode works, and prints the command.
# Merge the coder_agent block below into your template's own.

variable "boundary_repo" {
  description = "Where to clone boundary from (a git URL or a path inside the workspace image)"
  type        = string
}

variable "boundary_allowlist" {
  description = "Allow rules for the agent (boundary's rule grammar)"
  type        = list(string)
  default     = []
}

variable "boundary_agent" {
  description = "codex | claude | gemini | opencode"
  type        = string
  default     = "codex"
}

resource "coder_agent" "main" {
  os   = "linux"
  arch = "amd64"

  startup_script = <<-EOT
    set -eu
    src="$HOME/.local/share/boundary/src"
    if [ -d "$src/.git" ]; then git -C "$src" pull --ff-only -q; else git clone -q --depth 1 "${var.boundary_repo}" "$src"; fi
    BOUNDARY_ALLOWLIST='${join(";", var.boundary_allowlist)}' BOUNDARY_AGENT='${var.boundary_agent}' \
      BOUNDARY_PRESETS='npm,github' "$src/scripts/coder-startup.sh"
  EOT

  # If the workspace holds the agent's API key (OPENAI_API_KEY), keep it out of the jail: add
  # env = { BOUNDARY_SECRETS = "OPENAI_API_KEY" }  (boundary run then gives the agent a placeholder)
}

# A button in the workspace page that starts the agent jailed, in the workspace's terminal.
resource "coder_app" "agent_jailed" {
  agent_id     = coder_agent.main.id
  slug         = "agent-jailed"
  display_name = "Agent (jailed)"
  command      = "$HOME/.local/bin/boundary run -- ${var.boundary_agent}"
}
