import Config

# No :cluster_helper keys here: the defaults are those of ClusterHelper 0.5.1
# (roles [], scopes nil, scope ClusterHelper, pull_timeout 5000,
# pull_interval 7000, event_handler nil).

if config_env() == :test do
  # Peers and the unknown-message tests log warnings on purpose.
  config :logger, level: :error
end
