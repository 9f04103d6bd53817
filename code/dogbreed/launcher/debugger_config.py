"""SageMaker Debugger for training jobs: the hook, built-in rules and system profiling.

``ModelTrainer`` has no Debugger settings, so these are ``sagemaker.core.shapes`` passed
straight to ``TrainingJob.create``. The training image's smdebug hook reads the hook
config SageMaker writes into the container (see ``dogbreed.training.debugger``).
"""

from __future__ import annotations

from sagemaker.core import shapes
from sagemaker.core.debugger import Rule, rule_configs
from sagemaker.core.debugger.debugger import get_rule_container_image_uri

from dogbreed.job_outputs import TRIAL_DIR

# The built-in rules evaluated on the tensors the hook saves.
BUILT_IN_RULES = (
    rule_configs.vanishing_gradient,
    rule_configs.overfit,
    rule_configs.overtraining,
    rule_configs.loss_not_decreasing,
    rule_configs.poor_weight_initialization,
)
# How often the profiler samples CPU, GPU, memory, network and I/O of each instance.
SYSTEM_MONITOR_INTERVAL_MS = 500
HOOK_SAVE_INTERVAL = "100"  # steps between saved tensors


def debug_hook_config(output_uri: str) -> shapes.DebugHookConfig:
    """Save losses, metrics and gradients under ``<output_uri>/debug-output``, named like the job's own trial."""
    return shapes.DebugHookConfig(
        s3_output_path=f"{output_uri}/{TRIAL_DIR}",
        hook_parameters={"save_interval": HOOK_SAVE_INTERVAL},
        collection_configurations=[
            shapes.CollectionConfiguration(collection_name=name)
            for name in ("losses", "metrics", "gradients", "weights")
        ],
    )


def debug_rules(region: str) -> list[shapes.DebugRuleConfiguration]:
    """The built-in rules, each evaluated by AWS's rule image for ``region``."""
    image = get_rule_container_image_uri(None, region)
    rules = []
    for make_rule in BUILT_IN_RULES:
        config = Rule.sagemaker(make_rule()).to_debugger_rule_config_dict()
        rules.append(
            shapes.DebugRuleConfiguration(
                rule_configuration_name=config["RuleConfigurationName"],
                rule_evaluator_image=image,
                rule_parameters=config["RuleParameters"],
            )
        )
    return rules


def profiler_config(output_uri: str) -> shapes.ProfilerConfig:
    """System monitoring only: framework profiling adds overhead and is off."""
    return shapes.ProfilerConfig(
        s3_output_path=f"{output_uri}/profiler-output",
        profiling_interval_in_milliseconds=SYSTEM_MONITOR_INTERVAL_MS,
        disable_profiler=False,
    )


def profiler_rules(region: str) -> list[shapes.ProfilerRuleConfiguration]:
    """The ProfilerReport rule: an HTML report of the system metrics per job."""
    return [
        shapes.ProfilerRuleConfiguration(
            rule_configuration_name="ProfilerReport",
            rule_evaluator_image=get_rule_container_image_uri(None, region),
            rule_parameters={"rule_to_invoke": "ProfilerReport"},
        )
    ]
