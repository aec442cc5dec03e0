"""A1111 1.10's options (``override_settings`` keys): which the runner honours, which it runs at their default only,
which cannot change an answer here, and what is refused (pure).

A1111 applies ``override_settings`` with ``opts.set``, which fails on a key it does not know; so is an unknown key
refused here, by name. A known option is:

- honoured: typed in ``payload.OverrideSettings`` and acted on: ``sd_model_checkpoint``, ``sd_vae``,
  ``CLIP_stop_at_last_layers``, ``eta_noise_seed_delta``, ``img2img_fix_steps``, ``initial_noise_multiplier``, the
  image file options ``samples_format``, ``jpeg_quality``, ``webp_lossless``, ``enable_pnginfo``
  (img2img.api.image_formats), and ``enable_prompt_comments`` (false: '#' is text; true, the default: a prompt with
  a '#' is refused, comments are not stripped yet);
- ``PICTURE`` (changes the picture or the answer): accepted at A1111's default, which is what the runner runs;
  another value is refused, naming the key;
- ``NO_EFFECT`` (saving, paths, user interface, training, live previews, caches, what only acts on something the
  runner refuses anyway…): nothing in an answer depends on it here, so it is accepted, as A1111 accepts it.

Sources: modules/shared_options.py of A1111 v1.10.1 and the options its built-in extensions add (Lora, hypertile,
canvas-zoom-and-pan, extra-options-section, LDSR, ScuNET, SwinIR, prompt comments), and sd-webui-controlnet's
settings. Keys 1.10 no longer has (``enable_emphasis``, ``k_sched_type``, ``dont_fix_second_order_samplers_schedule``)
are unknown to it, and refused.
"""

from __future__ import annotations

from typing import Any

# option -> A1111's default: the value the runner draws with
PICTURE: dict[str, Any] = {
    # Stable Diffusion
    "enable_quantization": False, "emphasis": "Original", "enable_batch_seeds": True,
    "comma_padding_backtrack": 20, "tiling": False, "sd_unet": "Automatic", "sdxl_clip_l_skip": False,
    "sd_noise_schedule": "Default", "fp8_storage": "Disable", "cache_fp16_weight": False,
    # SDXL conditioning
    "sdxl_crop_top": 0, "sdxl_crop_left": 0, "sdxl_refiner_low_aesthetic_score": 2.5,
    "sdxl_refiner_high_aesthetic_score": 6.0,
    # VAE
    "sd_vae_encode_method": "Full", "sd_vae_decode_method": "Full",
    # img2img
    "img2img_extra_noise": 0.0, "img2img_color_correction": False, "img2img_background_color": "#ffffff",
    "upscaler_for_img2img": None,
    # inpainting: the inpainting model's masked-image strength, the overlay of the unmasked pixels, extra images
    "inpainting_mask_weight": 1.0, "overlay_inpaint": True, "return_mask": False, "return_mask_composite": False,
    # txt2img's hires fix
    "hires_fix_refiner_pass": "second pass", "token_merging_ratio_hr": 0.0, "use_old_hires_fix_width_height": False,
    # optimizations that change the picture
    "s_min_uncond": 0.0, "s_min_uncond_all": False, "token_merging_ratio": 0.0, "token_merging_ratio_img2img": 0.0,
    "pad_cond_uncond": False, "pad_cond_uncond_v0": False, "skip_early_cond": 0.0,
    # compatibility
    "use_old_emphasis_implementation": False, "use_old_karras_scheduler_sigmas": False,
    "no_dpmpp_sde_batch_determinism": False, "use_downcasted_alpha_bar": False,
    "refiner_switch_by_sample_steps": False,
    # sampler parameters (the request's own eta / s_* fields are honoured: see samplers.scheduler_spec)
    "eta_ddim": 0.0, "eta_ancestral": 1.0, "ddim_discretize": "uniform", "s_churn": 0.0, "s_tmin": 0.0,
    "s_tmax": 0.0, "s_noise": 1.0, "sigma_min": 0.0, "sigma_max": 0.0, "rho": 0.0,
    "always_discard_next_to_last_sigma": False, "sgm_noise_multiplier": False, "beta_dist_alpha": 0.6,
    "beta_dist_beta": 0.6,
    # face restoration, extra networks applied to every prompt, hypertile
    "face_restoration": False, "sd_hypernetwork": "None", "sd_lora": "None", "hypertile_enable_unet": False,
    "hypertile_enable_vae": False,
    # what the infotext says
    "add_model_hash_to_info": True, "add_model_name_to_info": True, "add_vae_hash_to_info": True,
    "add_vae_name_to_info": True, "add_version_to_infotext": True, "lora_add_hashes_to_infotext": True,
    # ControlNet
    "control_net_no_detectmap": False, "control_net_detectmap_autosaving": False,
}
# values other than the default that draw the same picture here
SAME_PICTURE: dict[str, tuple[Any, ...]] = {
    "sd_unet": ("None",),  # no separate UNet files: Automatic and None both use the checkpoint's
    "randn_source": ("CPU", "GPU"),  # the runner draws its noise on the CPU; see the README's differences
    "sd_hypernetwork": ("none",),
    "sd_lora": ("none",),
}

NO_EFFECT: frozenset[str] = frozenset({
    # saving images and grids, paths, directories
    "samples_save", "samples_filename_pattern", "save_images_add_number", "save_images_replace_action", "grid_save",
    "grid_format", "grid_extended_filename", "grid_only_if_multiple", "grid_prevent_empty_spots",
    "grid_zip_filename_pattern", "n_rows", "font", "grid_text_active_color", "grid_text_inactive_color",
    "grid_background_color", "save_txt", "save_images_before_face_restoration", "save_images_before_highres_fix",
    "save_images_before_color_correction", "save_mask", "save_mask_composite", "export_for_4chan",
    "img_downscale_threshold", "target_side_length", "img_max_size_mp", "use_original_name_batch",
    "use_upscaler_name_as_suffix", "save_selected_only", "save_write_log_csv", "save_init_img", "temp_dir",
    "clean_temp_dir_at_start", "save_incomplete_images", "notification_audio", "notification_volume",
    "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids",
    "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_save", "outdir_init_images", "save_to_dirs",
    "grid_save_to_dirs", "use_save_to_dirs_for_ui", "directories_filename_pattern", "directories_max_prompt_words",
    # upscaling and face restoration models (used only when enabled)
    "ESRGAN_tile", "ESRGAN_tile_overlap", "realesrgan_enabled_models", "dat_enabled_models", "DAT_tile",
    "DAT_tile_overlap", "set_scale_by_when_changing_upscaler", "face_restoration_model", "code_former_weight",
    "face_restoration_unload", "ldsr_steps", "ldsr_cached", "SCUNET_tile", "SCUNET_tile_overlap", "SWIN_tile",
    "SWIN_tile_overlap", "SWIN_torch_compile",
    # system, API, training, interrogate
    "auto_launch_browser", "enable_console_prompts", "show_warnings", "show_gradio_deprecation_warnings",
    "memmon_poll_rate", "samples_log_stdout", "multiple_tqdm", "enable_upscale_progressbar", "print_hypernet_extra",
    "list_hidden_files", "disable_mmap_load_safetensors", "hide_ldm_prints", "dump_stacks_on_signal",
    "profiling_explanation", "profiling_enable", "profiling_activities", "profiling_record_shapes",
    "profiling_profile_memory", "profiling_with_stack", "profiling_filename", "api_enable_requests",
    "api_forbid_local_requests", "api_useragent", "unload_models_when_training", "pin_memory",
    "save_optimizer_state", "save_training_settings_to_txt", "dataset_filename_word_regex",
    "dataset_filename_join_string", "training_image_repeats_per_epoch", "training_write_csv_every",
    "training_xattention_optimizations", "training_enable_tensorboard", "training_tensorboard_save_images",
    "training_tensorboard_flush_every", "interrogate_keep_models_in_memory", "interrogate_return_ranks",
    "interrogate_clip_num_beams", "interrogate_clip_min_length", "interrogate_clip_max_length",
    "interrogate_clip_dict_limit", "interrogate_clip_skip_categories", "interrogate_deepbooru_score_threshold",
    "deepbooru_sort_alpha", "deepbooru_use_spaces", "deepbooru_escape", "deepbooru_filter_tags",
    # model loading and caches: how, not what
    "sd_checkpoints_limit", "sd_checkpoints_keep_in_cpu", "sd_checkpoint_cache", "sd_vae_checkpoint_cache",
    "sd_vae_overrides_per_model_preferences", "auto_vae_precision", "auto_vae_precision_bfloat16", "upcast_attn",
    "cross_attention_optimization", "sd_vae_explanation", "sd3_enable_t5",
    "persistent_cond_cache", "batch_cond_uncond", "sd_checkpoint_hash",
    # the hires pass's conditioning computed under the first pass's extra networks: the hires prompt may name no
    # other LoRAs than the prompt (txt2img), so they are the same
    "hires_fix_use_firstpass_conds",
    "use_old_scheduling", "auto_backcompat",
    "img2img_batch_show_results_limit", "img2img_editor_height",
    "img2img_sketch_default_brush_color", "img2img_inpaint_mask_brush_color",
    "img2img_inpaint_sketch_default_brush_color", "uni_pc_variant", "uni_pc_skip_type",
    "uni_pc_order", "uni_pc_lower_order_final", "hide_samplers",
    # hypertile's sizes (hypertile itself is off), and its second pass (hires fix only)
    "hypertile_enable_unet_secondpass", "hypertile_max_depth_unet", "hypertile_max_tile_unet",
    "hypertile_swap_size_unet", "hypertile_max_depth_vae", "hypertile_max_tile_vae", "hypertile_swap_size_vae",
    "hypertile_explanation",
    # extra networks, Lora and textual inversion: the UI, lookup and caching (lora_functional: the runner's LoRA layers
    # are always beside the weights, A1111's functional mode; its default merges them: rounding apart, one picture)
    "lora_preferred_name", "lora_bundled_ti_to_infotext", "lora_show_all",
    "lora_hide_unknown_for_versions", "lora_in_memory_limit", "lora_not_found_warning_console",
    "lora_not_found_gradio_warning", "lora_functional", "extra_networks_card_order_field",
    "extra_networks_card_order",
    "extra_networks_show_hidden_directories", "extra_networks_dir_button_function", "extra_networks_hidden_models",
    "extra_networks_default_multiplier", "extra_networks_card_width", "extra_networks_card_height",
    "extra_networks_card_text_scale", "extra_networks_card_show_desc", "extra_networks_card_description_is_html",
    "extra_networks_tree_view_style", "extra_networks_tree_view_default_enabled",
    "extra_networks_tree_view_default_width", "extra_networks_add_text_separator", "ui_extra_networks_tab_reorder",
    "textual_inversion_print_at_load", "textual_inversion_add_hashes_to_infotext",
    # user interface, infotext reading, live previews, postprocessing tab, extensions
    "localization", "quicksettings_list", "ui_tab_order", "hidden_tabs", "ui_reorder_list", "gradio_theme",
    "gradio_themes_cache", "show_progress_in_title", "send_seed", "send_size", "js_live_preview_in_modal_lightbox",
    "js_modal_lightbox", "js_modal_lightbox_initially_zoomed", "js_modal_lightbox_gamepad",
    "js_modal_lightbox_gamepad_repeat", "sd_webui_modal_lightbox_icon_opacity",
    "sd_webui_modal_lightbox_toolbar_opacity", "gallery_height", "open_dir_button_choice",
    "keyedit_precision_attention", "keyedit_precision_extra", "keyedit_delimiters", "keyedit_delimiters_whitespace",
    "keyedit_move", "disable_token_counters", "include_styles_into_token_counters", "extra_options_txt2img",
    "extra_options_img2img", "extra_options_cols", "extra_options_accordion", "compact_prompt_box",
    "samplers_in_dropdown", "dimensions_and_batch_together", "sd_checkpoint_dropdown_use_short",
    "hires_fix_show_sampler", "hires_fix_show_prompts", "txt2img_settings_accordion", "img2img_settings_accordion",
    "interrupt_after_current", "return_grid", "do_not_show_images", "add_user_name_to_info",
    "infotext_skip_pasting", "infotext_styles", "disable_weights_auto_swap", "infotext_explanation",
    "show_progressbar", "live_previews_enable", "live_previews_image_format", "show_progress_grid",
    "show_progress_every_n_steps", "show_progress_type", "live_preview_allow_lowvram_full", "live_preview_content",
    "live_preview_refresh_period", "live_preview_fast_interrupt", "js_live_preview_in_modal_lightbox",
    "prevent_screen_sleep_during_generation", "postprocessing_enable_in_main_ui",
    "postprocessing_disable_in_extras", "postprocessing_operation_order", "upscaling_max_images_in_cache",
    "postprocessing_existing_caption_action", "disabled_extensions", "disable_all_extensions",
    "restore_config_state_file", "enable_reloading_ui_scripts", "settings_in_ui", "canvas_hotkey_zoom",
    "canvas_hotkey_adjust", "canvas_hotkey_shrink_brush", "canvas_hotkey_grow_brush", "canvas_hotkey_move",
    "canvas_hotkey_fullscreen", "canvas_hotkey_reset", "canvas_hotkey_overlap", "canvas_show_tooltip",
    "canvas_auto_expand", "canvas_blur_prompt", "canvas_disabled_functions",
    # ControlNet's own settings that only touch files, caches and the user interface
    "control_net_detectedmap_dir", "control_net_models_path", "control_net_modules_path",
    "control_net_unit_count", "control_net_model_cache_size", "control_net_inpaint_blur_sigma",
    "control_net_no_high_res_fix", "control_net_sync_field_args", "controlnet_show_batch_images_in_ui",
    "controlnet_increment_seed_during_batch", "controlnet_disable_openpose_edit", "controlnet_disable_photopea_edit",
    "controlnet_photopea_warning", "controlnet_ignore_noninpaint_mask", "controlnet_clip_detector_on_cpu",
    "controlnet_control_type_dropdown", "control_net_allow_script_control",
})
# the order of script callbacks, one option per callback category ("prioritized_callbacks_<category>")
NO_EFFECT_PREFIXES = ("prioritized_callbacks_",)


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return value is default
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return float(value) == float(default)
    return value == default


def refusal(key: str, value: Any) -> str | None:
    """Why ``override_settings[key] = value`` is refused; None when it is accepted (it draws what A1111 draws)."""
    if key in NO_EFFECT or key.startswith(NO_EFFECT_PREFIXES):
        return None
    if key in PICTURE or key in SAME_PICTURE:
        default = PICTURE.get(key)
        if (key in PICTURE and _same(value, default)) or value in SAME_PICTURE.get(key, ()):
            return None
        shown = ", ".join(repr(v) for v in ((default,) if key in PICTURE else ()) + SAME_PICTURE.get(key, ()))
        return f"A1111 option {key!r} = {value!r} changes the picture or the answer; the runner runs it at {shown} only"
    return f"{key!r} is not an A1111 1.10 option the runner knows (A1111 fails on unknown keys)"
