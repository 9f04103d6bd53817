"""Host-side tools, not part of either image's job: an ``/opt/ml`` tree builder for
local runs (:mod:`.opt_ml`) and the demo's generated image set (:mod:`.sample`)."""
