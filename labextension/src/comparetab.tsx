/**
 * A Compare tab in the main area, tracked like the run tabs so that Lab restores the open
 * ones on reload (by their run ids).
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { LabIcon, ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { CompareModel } from './compare';
import { CompareView } from './compareview';

export class CompareWidget extends MainAreaWidget<ReactWidget> {
  constructor(
    readonly model: CompareModel,
    onOpen: (runId: string) => void,
    icon: LabIcon
  ) {
    const content = ReactWidget.create(<CompareView model={model} onOpen={onOpen} />);
    content.addClass('clarion-CompareContent');
    super({ content });
    this.id = compareTabId(model.runIds);
    this.addClass('clarion-CompareTab');
    this.title.label = `Compare ${model.runIds.map(id => id.slice(-6)).join(' · ')}`;
    this.title.caption = `Runs ${model.runIds.join(', ')} side by side`;
    this.title.icon = icon;
    this.title.closable = true;
    void model.load();
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}

export function compareTabId(runIds: readonly string[]): string {
  return `clarion-compare-${runIds.join('-')}`;
}
