"""Grid-signal feed adapters: published CSV series and the modelled Chinese site feed."""
