-- The order projection (order_group): project() (project.lua, prepended) applied to one event the
-- order group read. KEYS and ARGV as project() takes them.
return project(KEYS, ARGV)
