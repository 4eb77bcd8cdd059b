"""Public path of the stream policies (``REALTIME["POLICY"]``): ``realtime.core.policy``."""

from realtime.core.policy import Action, BasePolicy, DefaultPolicy, PublicPolicy, RulesPolicy

__all__ = ["Action", "BasePolicy", "DefaultPolicy", "PublicPolicy", "RulesPolicy"]
