"""Registration hooks of mm-plugin-avsd-dialogue: public names -> lazy targets.

Names follow LAVIS so that its AVSD configs work: builder ``avsd_dialogue``, processors
``gpt_video_ft`` and ``gpt_dialogue``, model ``gpt_dialogue`` (types ``base``, ``tiny``) and task
``dialogue``. The plugin also adds ``mmrun make-avsd OUT_DIR`` (sample data).
"""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_models() -> dict:
    return {
        "gpt_dialogue": {
            "target": "mm_avsd_dialogue.model:GPTDialogue",
            "description": "GPT-2 with a video-feature prefix for video-grounded dialogue (AVSD)",
        },
    }


@hookimpl
def register_processors() -> dict:
    return {
        "gpt_video_ft": "mm_avsd_dialogue.video_processor:GPTVideoFeatureProcessor",
        "gpt_dialogue": "mm_avsd_dialogue.dialogue_processor:GPTDialogueProcessor",
    }


@hookimpl
def register_datasets() -> dict:
    return {
        "avsd_dialogue": {
            "target": "mm_avsd_dialogue.builder:AVSDDialogueBuilder",
            "data_type": "features",
            "description": "DSTC7 Audio-Visual Scene-Aware Dialog with I3D/VGGish features",
        },
    }


@hookimpl
def register_tasks() -> dict:
    return {
        "dialogue": {
            "target": "mm_avsd_dialogue.task:DialogueTask",
            "run_keys": {"num_beams": "int", "max_len": "int", "min_len": "int"},
            "description": "generate answers; BLEU-1..4, METEOR, ROUGE-L, CIDEr; agg_metrics = CIDEr + Bleu_4",
        },
    }


@hookimpl
def register_commands() -> dict:
    return {
        "make-avsd": {
            "target": "mm_avsd_dialogue.sample_data:main",
            "help": "write small seeded AVSD-format sample data (dialogs + features)",
        },
    }
