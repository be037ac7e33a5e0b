"""LeRobot policy plugin: ``lerobot-eval --policy.path=BUNDLE`` loads a vidact bundle.

LeRobot (0.4.4 to 0.6.1) finds third-party policies by distribution name (``lerobot_policy_*``, imported by
``lerobot.utils.import_utils.register_third_party_plugins`` at the start of ``lerobot-eval`` and
``lerobot-record``), then resolves a registered config class ``<Name>Config`` in a module named
``configuration_*`` to ``<Name>Policy`` in the sibling ``modeling_*`` module and to
``make_<type>_pre_post_processors`` in ``processor_*``. This folder holds those three modules;
``package/`` is the one-line ``lerobot_policy_vidact`` distribution that imports them:

    pip install --no-deps -e vidact/deploy/lerobot_plugin/package

The network, observation handling, clipping and chunk execution are ``vidact.deploy.Policy``'s;
normalization is inside the weights, so the LeRobot pre/post-processors only rename and move
tensors to the device.
"""

from vidact.deploy.lerobot_plugin.configuration_vidact import VidActConfig

__all__ = ["VidActConfig"]
