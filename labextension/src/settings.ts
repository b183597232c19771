/**
 * The extension's settings as Lab's settings editor shows them (`schema/plugin.json`): kept
 * current when the user changes them there, with defaults until the registry has answered.
 */
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ISignal, Signal } from '@lumino/signaling';

import { ApplyMode } from './protocol';

export const PLUGIN_ID = '@clarion/sidebar:plugin';

export class ClarionSettings {
  notifications = true;
  defaultApplyMode: ApplyMode = 'review';
  private _changed = new Signal<this, void>(this);

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Follows the registry's settings (the composite: the user's over the defaults). */
  follow(settings: ISettingRegistry.ISettings): void {
    const read = (): void => {
      this.notifications = settings.composite.notifications !== false;
      const mode = settings.composite.defaultApplyMode;
      this.defaultApplyMode = mode === 'auto' || mode === 'never' ? mode : 'review';
      this._changed.emit();
    };
    settings.changed.connect(read);
    read();
  }
}
