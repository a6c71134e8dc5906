"""Pure domain types: regions, sites, pools, jobs, tenants, money. No I/O, no clock reads."""
